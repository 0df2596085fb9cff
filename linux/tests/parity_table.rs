//! The README's "Fibers and futures" table stays complete: every method of `FiberFs`,
//! `FiberMeta`, `FiberNet`, `FiberMsg`, `FiberReady`, `FiberSignal` and `FiberTransfer` has a row, each row names a fiber method and a future
//! function that exist, and the future is the fiber call's twin of the same name (the
//! raw-SQE row aside, whose future form is keel-core's status block).

use std::collections::BTreeSet;

fn read(rel: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The method names declared in `pub trait NAME { ... }` of `src`.
fn trait_methods(src: &str, name: &str) -> BTreeSet<String> {
    let start = src.find(&format!("pub trait {name} {{")).unwrap_or_else(|| panic!("no trait {name}"));
    let body = &src[start..];
    let end = body.find("\n}\n").expect("the trait ends");
    body[..end]
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("fn "))
        .map(|l| l.split(['(', '<']).next().unwrap().to_owned())
        .chain(
            body[..end]
                .lines()
                .filter_map(|l| l.trim_start().strip_prefix("unsafe fn "))
                .map(|l| l.split(['(', '<']).next().unwrap().to_owned()),
        )
        .collect()
}

/// Whether `src` declares a public function or async function `name`, or re-exports it.
fn declares_fn(src: &str, name: &str) -> bool {
    [
        format!("pub fn {name}("),
        format!("pub async fn {name}("),
        format!("pub fn {name}<"),
        format!("pub async fn {name}<"),
        format!("pub async unsafe fn {name}("),
    ]
    .iter()
    .any(|d| src.contains(d.as_str()))
}

/// (fiber cell, future cell) of each row of the table.
fn rows() -> Vec<(String, String)> {
    let readme = read("README.md");
    let start = readme.find("## Fibers and futures").expect("the README has the section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    section
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| operation"))
        .map(|l| {
            let cells: Vec<&str> = l.split(" | ").collect();
            assert_eq!(cells.len(), 3, "three columns: {l}");
            (cells[1].trim_matches('`').to_owned(), cells[2].trim_end_matches(" |").trim_matches('`').to_owned())
        })
        .collect()
}

#[test]
fn every_fiber_call_has_a_row_with_its_future_twin() {
    let traits = [
        ("FiberFs", "src/fs/fiber.rs", "fs::", vec!["src/fs/future.rs", "src/fs/direct.rs"]),
        ("FiberNet", "src/net/fiber.rs", "net::future::", vec!["src/net/future.rs", "src/net/future/exchange.rs"]),
        ("FiberReady", "src/ready/fiber.rs", "ready::", vec!["src/ready/future.rs"]),
        ("FiberMeta", "src/fs/meta.rs", "fs::", vec!["src/fs/meta_future.rs"]),
        ("FiberMsg", "src/net/msg_fiber.rs", "net::future::", vec!["src/net/msg_future.rs"]),
        ("FiberSignal", "src/signal.rs", "signal::", vec!["src/signal_future.rs"]),
        ("FiberTransfer", "src/transfer/fiber.rs", "transfer::", vec!["src/transfer/future.rs"]),
    ];
    let rows = rows();
    let mut seen = BTreeSet::new();
    for (tr, file, prefix, futures) in traits {
        let methods = trait_methods(&read(file), tr);
        assert!(!methods.is_empty(), "{tr}: found {methods:?}");
        let future_src: String = futures.iter().map(|f| read(f)).collect();
        for m in &methods {
            let fiber = format!("{tr}::{m}");
            let row = rows.iter().find(|(f, _)| *f == fiber).unwrap_or_else(|| panic!("no README row for {fiber}"));
            seen.insert(fiber.clone());
            if m == "run_op" {
                assert!(row.1.contains("io_status::initiate"), "{fiber}: {}", row.1);
                continue;
            }
            // `FiberTransfer`'s methods end in `_fd` (beside `FiberNet`'s on one `Fiber`);
            // the futures, in their own module, do not.
            let twin = if tr == "FiberTransfer" { m.strip_suffix("_fd").unwrap_or(m) } else { m.as_str() };
            assert_eq!(row.1, format!("{prefix}{twin}"), "{fiber}'s twin is named as it is");
            assert!(declares_fn(&future_src, twin), "{prefix}{twin} is not declared in {futures:?}");
        }
    }
    for (fiber, _) in &rows {
        assert!(seen.contains(fiber), "the README row {fiber} names no method of the fiber traits");
    }
}
