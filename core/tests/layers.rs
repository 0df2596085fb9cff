//! The layer check of keel-core: no module names a module of a higher layer.
//!
//! The layers are the ```text block after the line `//! # Layers` in the crate doc of src/lib.rs,
//! one layer a line: `<number> <name> <module path>...`, higher numbers on top, paths from the
//! crate root written with `::`. A module sits in the layer of the longest listed path that is a
//! prefix of its own (exec/sched.rs is `exec::sched`, task/mod.rs is `task`); lib.rs, the root, is
//! exempt; a file in no layer is an error. Every path of non-test code that starts with `crate::`,
//! `super::`, `self::` or a child module's name (`use fiber::Fiber` in switch/mod.rs) is read: in
//! `use` lines, grouped and nested, and inline in expressions, types, attributes and macro calls.
//! A path resolves to the deepest module it walks through (files and inline `mod x {` blocks); a
//! root re-export (`crate::TaskHandle`, `pub use a::B as C`) resolves to the module it comes from.
//! The importing module's layer must be at least the target's.
//!
//! A small hand tokenizer, not `syn`: a test takes no new dependency, and paths need tokens, not a
//! syntax tree. It drops comments (nested block comments too), string, raw-string, char and byte
//! literals and lifetimes. Test code is a `#[test]` item or an item under a `cfg` that implies
//! `test` (`cfg(test)`, `cfg(all(test, ...))`), up to its `;` or its closing brace; code under
//! `cfg(keel_loom)` is checked. It does not parse: paths a macro assembles from fragments (a macro
//! body is read as written, `$crate::` as `crate::`); `#[path]` attributes; glob re-exports at the
//! root; re-exports below the root (`crate::exec::Unparker` resolves to `exec`, not `exec::park`);
//! names a `use` brought in (the `use` itself is checked); `pub(in path)` (skipped). A test `cfg`
//! on a struct field or a generic parameter hides the rest of that item.
//!
//! The file runs past the house ~400 lines: the check is one test binary of its own (tokenizer,
//! resolver, the real-tree test), and its self-test sits next to it so that a change to the
//! checker meets the planted violations it must still find.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Whether a lib.rs without a `# Layers` block fails the real-tree test (it has one: a block
/// removed by mistake must fail the check, not skip it).
const BLOCK_REQUIRED: bool = true;

/// A module path from the crate root; empty for the root.
type ModPath = Vec<String>;

#[derive(Debug, PartialEq)]
enum Tok {
    Ident(String),
    PathSep,
    Punct(char),
}

struct Token {
    tok: Tok,
    line: usize,
}

/// Past a `"`-quoted literal whose opening quote is at `i`; `raw` holds a raw string's `#` count.
fn skip_string(c: &[char], mut i: usize, raw: Option<usize>, line: &mut usize) -> usize {
    i += 1;
    while i < c.len() {
        match c[i] {
            '\\' if raw.is_none() => i += 1,
            '"' if raw.is_none_or(|n| c[i + 1..].iter().take(n).filter(|&&h| h == '#').count() == n) => {
                return i + 1 + raw.unwrap_or(0);
            }
            '\n' => *line += 1,
            _ => {}
        }
        i += 1;
    }
    i
}

/// Past a char literal (`'x'`, `'\n'`) or a lifetime (`'a`) that starts at `i`.
fn skip_quote(c: &[char], i: usize) -> usize {
    let at = |k: usize| c.get(k).copied().unwrap_or('\0');
    if at(i + 1) == '\\' {
        (i + 3..c.len()).find(|&k| c[k] == '\'').map_or(c.len(), |k| k + 1)
    } else if at(i + 2) == '\'' {
        i + 3
    } else {
        (i + 1..c.len()).find(|&k| !(c[k].is_alphanumeric() || c[k] == '_')).unwrap_or(c.len())
    }
}

/// Identifiers (raw ones without their `r#`), `::` and single punctuation, each with its line;
/// comments, literals and lifetimes leave no token.
fn tokenize(src: &str) -> Vec<Token> {
    let c: Vec<char> = src.chars().collect();
    let at = |k: usize| c.get(k).copied().unwrap_or('\0');
    let word_end = |k: usize| (k..c.len()).find(|&e| !(c[e].is_alphanumeric() || c[e] == '_')).unwrap_or(c.len());
    let (mut i, mut line, mut out) = (0, 1, Vec::new());
    while i < c.len() {
        let (ch, start_line) = (c[i], line);
        let mut push = |tok| out.push(Token { tok, line: start_line });
        if ch == '/' && at(i + 1) == '/' {
            i = (i..c.len()).find(|&k| c[k] == '\n').unwrap_or(c.len());
        } else if ch == '/' && at(i + 1) == '*' {
            let mut nest = 0;
            while i < c.len() {
                match (c[i], at(i + 1)) {
                    ('/', '*') => (nest, i) = (nest + 1, i + 2),
                    ('*', '/') => (nest, i) = (nest - 1, i + 2),
                    (n, _) => (line, i) = (line + usize::from(n == '\n'), i + 1),
                }
                if nest == 0 {
                    break;
                }
            }
        } else if ch == '"' {
            i = skip_string(&c, i, None, &mut line);
        } else if ch == '\'' {
            i = skip_quote(&c, i);
        } else if ch.is_ascii_digit() {
            let in_number =
                |k: usize| c[k].is_alphanumeric() || c[k] == '_' || (c[k] == '.' && at(k + 1).is_ascii_digit());
            i = (i..c.len()).find(|&k| !in_number(k)).unwrap_or(c.len());
        } else if ch.is_alphabetic() || ch == '_' {
            let end = word_end(i);
            let hashes = (end..c.len()).take_while(|&k| c[k] == '#').count();
            let word: String = c[i..end].iter().collect();
            i = match (word.as_str(), at(end)) {
                ("r" | "br" | "cr", _) if at(end + hashes) == '"' => {
                    skip_string(&c, end + hashes, Some(hashes), &mut line)
                }
                ("b" | "c", '"') => skip_string(&c, end, None, &mut line),
                ("b", '\'') => skip_quote(&c, end),
                ("r", '#') => {
                    push(Tok::Ident(c[end + 1..word_end(end + 1)].iter().collect()));
                    word_end(end + 1)
                }
                _ => {
                    push(Tok::Ident(word.clone()));
                    end
                }
            };
        } else if ch == ':' && at(i + 1) == ':' {
            i += 2;
            push(Tok::PathSep);
        } else {
            line += usize::from(ch == '\n');
            i += 1;
            if !ch.is_whitespace() {
                push(Tok::Punct(ch));
            }
        }
    }
    out
}

fn is(t: &[Token], i: usize, p: char) -> bool {
    t.get(i).is_some_and(|x| x.tok == Tok::Punct(p))
}

fn ident(t: &[Token], i: usize) -> Option<&str> {
    match t.get(i).map(|x| &x.tok) {
        Some(Tok::Ident(s)) => Some(s),
        _ => None,
    }
}

/// The index of the delimiter that closes the one at `open`; `t.len()` if none does.
fn closing(t: &[Token], open: usize) -> usize {
    let mut depth = 0usize;
    for (k, x) in t.iter().enumerate().skip(open) {
        match x.tok {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') if depth <= 1 => return k,
            Tok::Punct(')' | ']' | '}') => depth -= 1,
            _ => {}
        }
    }
    t.len()
}

/// Past the item that starts at `i` (after its attributes): its `;`, its first `{...}` group, or
/// up to a closer of the enclosing scope.
fn end_of_item(t: &[Token], mut i: usize) -> usize {
    while i < t.len() {
        match t[i].tok {
            Tok::Punct('(' | '[') => i = closing(t, i) + 1,
            Tok::Punct('{') => return closing(t, i) + 1,
            Tok::Punct(';') => return i + 1,
            Tok::Punct(')' | ']' | '}') => return i,
            _ => i += 1,
        }
    }
    i
}

/// The index of the closer of the scope that `i` is in; `t.len()` at the top level.
fn end_of_scope(t: &[Token], mut i: usize) -> usize {
    while i < t.len() && !matches!(t[i].tok, Tok::Punct(')' | ']' | '}')) {
        i = if matches!(t[i].tok, Tok::Punct('(' | '[' | '{')) { closing(t, i) + 1 } else { i + 1 };
    }
    i
}

/// Whether the `cfg` predicate at `i` holds only in test builds; and the index after it.
fn cfg_implies_test(t: &[Token], i: usize) -> (bool, usize) {
    match ident(t, i) {
        Some("test") if !is(t, i + 1, '(') && !is(t, i + 1, '=') => (true, i + 1),
        Some(op @ ("all" | "any" | "not")) if is(t, i + 1, '(') => {
            let (end, mut j, mut parts) = (closing(t, i + 1), i + 2, Vec::new());
            while j < end {
                let (part, next) = cfg_implies_test(t, j);
                parts.push(part);
                j = if is(t, next, ',') { next + 1 } else { end };
            }
            let holds = match op {
                "all" => parts.contains(&true),
                "any" => !parts.is_empty() && !parts.contains(&false),
                _ => false,
            };
            (holds, end + 1)
        }
        _ => {
            let mut j = i;
            while j < t.len() && !is(t, j, ',') && !is(t, j, ')') {
                j = if is(t, j, '(') { closing(t, j) + 1 } else { j + 1 };
            }
            (false, j)
        }
    }
}

/// If a test attribute (`#[test]`, `#[cfg(<implies test>)]`, or inner `#![...]`) starts at `i`:
/// the index after it and whether it is inner.
fn test_attribute(t: &[Token], i: usize) -> Option<(usize, bool)> {
    let inner = is(t, i + 1, '!');
    let open = i + 1 + usize::from(inner);
    if !is(t, open, '[') {
        return None;
    }
    let end = closing(t, open);
    let body = &t[open + 1..end];
    let test = match (ident(body, 0), body.len()) {
        (Some("test"), 1) => true,
        (Some("cfg"), _) => is(body, 1, '(') && cfg_implies_test(body, 2).0,
        _ => false,
    };
    test.then_some((end + 1, inner))
}

/// Reads the path (a `use` tree) that starts at `i` into `out` as (segments, alias) leaves;
/// returns the index after it.
fn read_tree(t: &[Token], mut i: usize, prefix: &[String], out: &mut Vec<(ModPath, Option<String>)>) -> usize {
    let mut segs = prefix.to_vec();
    loop {
        match t.get(i).map(|x| &x.tok) {
            Some(Tok::Ident(s)) => segs.push(s.clone()),
            Some(Tok::Punct('*')) => segs.push("*".into()),
            Some(Tok::Punct('{')) => {
                i += 1;
                while i < t.len() && !is(t, i, '}') {
                    i = read_tree(t, i, &segs, out);
                    if !is(t, i, ',') {
                        break;
                    }
                    i += 1;
                }
                return i + 1;
            }
            _ => break,
        }
        i += 1;
        if t.get(i).map(|x| &x.tok) != Some(&Tok::PathSep) {
            break;
        }
        i += 1;
    }
    if segs.len() > 1 && segs.last().is_some_and(|s| s == "self") {
        segs.pop();
    }
    let alias =
        ident(t, i + 1).filter(|_| ident(t, i) == Some("as") && t.get(i + 2).map(|x| &x.tok) != Some(&Tok::PathSep));
    let after = if alias.is_some() { i + 2 } else { i };
    out.push((segs, alias.map(String::from)));
    after
}

/// A path as written, in the module (file or inline `mod`) that names it.
struct RawPath {
    line: usize,
    scope: ModPath,
    segs: ModPath,
    alias: Option<String>,
    in_use: bool,
}

/// Reads the paths of the non-test code of the file of `module`; notes its inline modules.
fn scan(module: &[String], t: &[Token], inline_mods: &mut Vec<ModPath>, paths: &mut Vec<RawPath>) {
    let mut scopes: Vec<(ModPath, usize)> = vec![(module.to_vec(), 0)];
    let (mut i, mut depth, mut in_use) = (0, 0, false);
    while i < t.len() {
        let scope = scopes.last().expect("the file's scope is never popped").0.clone();
        let starts_path = i == 0 || t[i - 1].tok != Tok::PathSep;
        match &t[i].tok {
            Tok::Punct('#') => {
                if let Some((end, inner)) = test_attribute(t, i) {
                    // An inner test attribute makes the rest of the scope test code.
                    i = if inner { end_of_scope(t, end) } else { end_of_item(t, end) };
                    continue;
                }
            }
            Tok::Punct(';') => in_use = false,
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                if scopes.len() > 1 && scopes.last().is_some_and(|s| s.1 == depth) {
                    scopes.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Tok::Ident(w) if w == "use" => in_use = true,
            Tok::Ident(w) if w == "pub" && is(t, i + 1, '(') => {
                i = closing(t, i + 1) + 1;
                continue;
            }
            Tok::Ident(w) if w == "mod" && is(t, i + 2, '{') => {
                if let Some(name) = ident(t, i + 1) {
                    let inline = [scope.as_slice(), &[name.to_string()]].concat();
                    inline_mods.push(inline.clone());
                    depth += 1;
                    scopes.push((inline, depth));
                    i += 3;
                    continue;
                }
            }
            Tok::Ident(_) if starts_path && t.get(i + 1).map(|x| &x.tok) == Some(&Tok::PathSep) => {
                let (line, mut leaves) = (t[i].line, Vec::new());
                i = read_tree(t, i, &[], &mut leaves);
                for (segs, alias) in leaves {
                    paths.push(RawPath { line, scope: scope.clone(), segs, alias, in_use });
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
}

/// exec/sched.rs -> exec::sched, task/mod.rs -> task, lib.rs -> the root.
fn module_of(file: &str) -> ModPath {
    let mut m: ModPath = file.trim_end_matches(".rs").split('/').map(String::from).collect();
    if m.last().is_some_and(|s| s == "mod") || m == ["lib"] {
        m.pop();
    }
    m
}

struct Layers {
    layers: Vec<(u32, String)>,
    /// Each listed module path, with the index of its layer.
    placed: Vec<(ModPath, usize)>,
}

impl Layers {
    /// The block in lib.rs's crate doc; `None` if lib.rs has no `# Layers` heading.
    fn parse(lib: &str) -> Option<Result<Layers, String>> {
        let doc: Vec<&str> =
            lib.lines().filter_map(|l| l.trim_start().strip_prefix("//!")).map(|l| l.trim_end()).collect();
        let heading = doc.iter().position(|l| l.trim() == "# Layers")?;
        let Some(open) = doc[heading..].iter().position(|l| l.trim() == "```text") else {
            return Some(Err("no ```text block after `# Layers`".into()));
        };
        let (mut layers, mut placed) = (Layers { layers: Vec::new(), placed: Vec::new() }, BTreeSet::new());
        for line in doc[heading + open + 1..].iter().map(|l| l.trim()).take_while(|l| !l.starts_with("```")) {
            let words: Vec<&str> = line.split_whitespace().collect();
            let (Some(number), [_, name, paths @ ..]) = (words.first().and_then(|n| n.parse::<u32>().ok()), &words[..])
            else {
                if line.is_empty() {
                    continue;
                }
                return Some(Err(format!("`{line}` is not `<number> <name> <module path>...`")));
            };
            if paths.is_empty() || layers.layers.iter().any(|l| l.0 == number) {
                return Some(Err(format!("`{line}`: a layer needs a number of its own and module paths")));
            }
            for path in paths {
                if !placed.insert(*path) {
                    return Some(Err(format!("{path} is listed twice")));
                }
                layers.placed.push((path.split("::").map(String::from).collect(), layers.layers.len()));
            }
            layers.layers.push((number, name.to_string()));
        }
        Some(Ok(layers))
    }

    /// The layer of the longest listed path that is a prefix of `module`.
    fn of(&self, module: &[String]) -> Option<(u32, &str)> {
        let (_, layer) = self.placed.iter().filter(|(p, _)| module.starts_with(p)).max_by_key(|(p, _)| p.len())?;
        Some((self.layers[*layer].0, &self.layers[*layer].1))
    }
}

struct Modules {
    all: BTreeSet<ModPath>,
    /// Names the root re-exports, with the module each comes from.
    reexports: BTreeMap<String, ModPath>,
}

impl Modules {
    /// The module `segs` names from `scope`; `None` if it starts with no `crate`, `super`, `self`
    /// or child module of `scope` (a path into another crate, a type's associated item).
    fn resolve(&self, scope: &[String], segs: &[String]) -> Option<ModPath> {
        let (mut module, mut rest) = match segs.first()?.as_str() {
            "crate" => (ModPath::new(), &segs[1..]),
            "self" => (scope.to_vec(), &segs[1..]),
            "super" => (scope.to_vec(), segs),
            child if self.all.contains(&[scope, &[child.to_string()]].concat()) => (scope.to_vec(), segs),
            _ => return None,
        };
        while rest.first().is_some_and(|s| s == "super") {
            module.pop();
            rest = &rest[1..];
        }
        for seg in rest {
            let child = [module.as_slice(), std::slice::from_ref(seg)].concat();
            if self.all.contains(&child) {
                module = child;
            } else {
                return Some(self.reexports.get(seg).filter(|_| module.is_empty()).cloned().unwrap_or(module));
            }
        }
        Some(module)
    }
}

struct Report {
    problems: Vec<String>,
    files: usize,
    paths: usize,
}

fn display(module: &[String]) -> String {
    if module.is_empty() { "the crate root".into() } else { module.join("::") }
}

/// Checks `files` (paths under src/ with `/`, and sources); `None` if lib.rs has no `# Layers`.
fn check(files: &[(String, String)]) -> Option<Report> {
    let lib = files.iter().find(|(file, _)| file == "lib.rs")?;
    let layers = match Layers::parse(&lib.1)? {
        Ok(layers) => layers,
        Err(e) => {
            return Some(Report { problems: vec![format!("core/src/lib.rs: # Layers: {e}")], files: 0, paths: 0 });
        }
    };
    let mut modules = Modules { all: BTreeSet::from([ModPath::new()]), reexports: BTreeMap::new() };
    let (mut inline, mut raw) = (Vec::new(), Vec::new());
    for (file, src) in files {
        let mut paths = Vec::new();
        scan(&module_of(file), &tokenize(src), &mut inline, &mut paths);
        modules.all.insert(module_of(file));
        raw.extend(paths.into_iter().map(|p| (file, p)));
    }
    modules.all.extend(inline);
    let mut reexports = BTreeMap::new();
    for (_, p) in raw.iter().filter(|(file, p)| *file == "lib.rs" && p.in_use && p.scope.is_empty()) {
        let name = p.alias.as_ref().or(p.segs.last()).expect("a path has a segment");
        if let Some(from) = modules.resolve(&[], &p.segs).filter(|_| name != "*" && name != "_") {
            reexports.insert(name.clone(), from);
        }
    }
    modules.reexports = reexports;
    let mut report = Report { problems: Vec::new(), files: files.len(), paths: 0 };
    for (path, layer) in &layers.placed {
        if !modules.all.contains(path) {
            let (number, name) = &layers.layers[*layer];
            report.problems.push(format!(
                "core/src/lib.rs: # Layers lists {}, not a module (layer {number} {name})",
                display(path)
            ));
        }
    }
    for (file, _) in files.iter().filter(|(file, _)| file != "lib.rs" && layers.of(&module_of(file)).is_none()) {
        let module = display(&module_of(file));
        report.problems.push(format!("core/src/{file}: place {module} in a layer in lib.rs's # Layers block"));
    }
    for (file, p) in raw.iter().filter(|(file, _)| *file != "lib.rs") {
        let Some(target) = modules.resolve(&p.scope, &p.segs) else { continue };
        report.paths += 1;
        let (Some((from, from_name)), Some((to, to_name))) = (layers.of(&p.scope), layers.of(&target)) else {
            continue;
        };
        if from < to {
            report.problems.push(format!(
                "core/src/{file}:{}: {} (layer {from} {from_name}) imports {} from {} (layer {to} {to_name}), a higher layer",
                p.line,
                display(&p.scope),
                p.segs.join("::"),
                display(&target),
            ));
        }
    }
    Some(report)
}

fn read_sources(dir: &Path, prefix: &str, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).expect("core/src is readable") {
        let path = entry.expect("core/src is readable").path();
        let name = format!("{prefix}{}", path.file_name().expect("an entry has a name").to_string_lossy());
        if path.is_dir() {
            read_sources(&path, &format!("{name}/"), out);
        } else if name.ends_with(".rs") {
            out.push((name, std::fs::read_to_string(&path).expect("a source file is UTF-8")));
        }
    }
}

#[test]
fn keel_core_imports_point_down_the_layers() {
    let mut files = Vec::new();
    read_sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), "", &mut files);
    files.sort();
    let Some(report) = check(&files) else {
        if BLOCK_REQUIRED {
            panic!("layers: no `# Layers` block in core/src/lib.rs");
        }
        println!("layers: no `# Layers` block in core/src/lib.rs; skipped");
        return;
    };
    for problem in &report.problems {
        println!("{problem}");
    }
    println!("layers: {} files checked, {} paths read, {} problems", report.files, report.paths, report.problems.len());
    assert!(report.problems.is_empty(), "layers: {} problems (listed above)", report.problems.len());
}

// The self-test: a tree in which `low` and `high::base` sit in layer 1, `high` and `low::top` in
// layer 2. lib.rs re-exports `high::HighType` and `low::LowType as Renamed`.

const TREE_LIB: &str = r#"//! # Layers
//!
//! ```text
//! 2 high high low::top
//!
//! 1 low low high::base
//! ```
mod high;
mod low;
pub use high::HighType;
pub use low::{LowType as Renamed};
"#;

/// Checks the tree with some files' sources replaced (or added).
fn tree(replace: &[(&str, &str)]) -> Report {
    let mut files: BTreeMap<&str, &str> = BTreeMap::from([
        ("lib.rs", TREE_LIB),
        ("high/mod.rs", "pub mod base;\npub struct HighType;\n"),
        ("high/base.rs", "pub struct BaseType;\n"),
        ("low.rs", "pub mod top;\npub struct LowType;\n"),
        ("low/top.rs", "pub struct Top;\n"),
    ]);
    files.extend(replace.iter().copied());
    let files: Vec<(String, String)> = files.into_iter().map(|(f, s)| (f.to_string(), s.to_string())).collect();
    check(&files).expect("the tree's lib.rs has a # Layers block")
}

fn problems(report: &Report) -> Vec<&str> {
    report.problems.iter().map(String::as_str).collect()
}

#[test]
fn a_planted_upward_use_fails() {
    let report = tree(&[("low.rs", "pub struct LowType;\nuse crate::high::HighType;\n")]);
    let expected =
        "core/src/low.rs:2: low (layer 1 low) imports crate::high::HighType from high (layer 2 high), a higher layer";
    assert_eq!(problems(&report), [expected]);
}

#[test]
fn inline_upward_paths_fail_in_expressions_types_attributes_and_macros() {
    let low = r#"pub fn f(x: <crate::high::HighType as Tr>::Out) {
    crate::high::make!(x);
    let _ = crate::high::HighType::new();
}
#[crate::high::attr]
pub struct LowType;
"#;
    let report = tree(&[("low.rs", low)]);
    let lines: Vec<&str> = report.problems.iter().map(|p| &p[..p.find(": ").unwrap()]).collect();
    assert_eq!(lines, ["core/src/low.rs:1", "core/src/low.rs:2", "core/src/low.rs:3", "core/src/low.rs:5"]);
}

#[test]
fn an_upward_path_in_a_grouped_use_fails() {
    let low = "use crate::{low::LowType, high::{base::BaseType, HighType}};\npub struct LowType;\n";
    let report = tree(&[("low.rs", low)]);
    assert_eq!(report.paths, 3);
    let expected =
        "core/src/low.rs:1: low (layer 1 low) imports crate::high::HighType from high (layer 2 high), a higher layer";
    assert_eq!(problems(&report), [expected]);
}

#[test]
fn an_upward_super_or_child_module_path_fails() {
    let report = tree(&[("high/base.rs", "use super::HighType;\n"), ("low.rs", "pub mod top;\nuse top::Top;\n")]);
    assert_eq!(
        problems(&report),
        [
            "core/src/high/base.rs:1: high::base (layer 1 low) imports super::HighType from high (layer 2 high), a higher layer",
            "core/src/low.rs:2: low (layer 1 low) imports top::Top from low::top (layer 2 high), a higher layer",
        ]
    );
}

#[test]
fn a_root_reexport_does_not_hide_an_upward_import() {
    let report = tree(&[("low.rs", "pub struct LowType;\nfn f() -> crate::HighType { todo!() }\n")]);
    let expected =
        "core/src/low.rs:2: low (layer 1 low) imports crate::HighType from high (layer 2 high), a higher layer";
    assert_eq!(problems(&report), [expected]);
}

#[test]
fn an_inline_module_is_a_module_of_its_own() {
    let lib = TREE_LIB.replace("low::top", "low::top low::wire");
    let low = r#"pub struct LowType;
pub mod wire {
    use crate::high::HighType;
    fn f() { super::LowType::new(); }
}
fn g() { wire::f(); }
"#;
    let report = tree(&[("lib.rs", &lib), ("low.rs", low)]);
    let expected = "core/src/low.rs:6: low (layer 1 low) imports wire::f from low::wire (layer 2 high), a higher layer";
    assert_eq!(problems(&report), [expected]);
}

#[test]
fn paths_down_or_within_a_layer_pass() {
    let high = r#"pub mod base;
use crate::low::LowType;
use self::base::BaseType;
use crate::{Renamed, low::top::Top};
mod inner {
    use super::super::low::LowType as L;
    fn f() { super::HighType::new(); }
}
"#;
    let base = "use crate::low::LowType;\nuse super::super::low::{self, LowType as L};\n";
    let low =
        "pub mod top;\nuse crate::high::base::BaseType;\nfn f() { self::LowType::new(); crate::Renamed::new(); }\n";
    let top = "use super::LowType;\n";
    let report = tree(&[("high/mod.rs", high), ("high/base.rs", base), ("low.rs", low), ("low/top.rs", top)]);
    assert_eq!(problems(&report), Vec::<&str>::new());
    assert_eq!(report.paths, 13, "every path above is read");
}

#[test]
fn test_code_comments_and_literals_pass() {
    let low = r##"// use crate::high::HighType;
/// crate::high::HighType
/* crate::high::HighType /* nested */ crate::high::HighType */
const S: &str = "crate::high::HighType \" crate::high::X";
const R: &str = r#"crate::high::HighType "quoted" "#;
const C: char = '"';
fn lifetime<'a>(x: &'a u8) -> &'a u8 { x }
#[cfg(keel_loom)]
use crate::high::base::BaseType;
#[cfg(test)]
mod tests {
    use crate::high::HighType;
}
mod inner {
    #![cfg(test)]
    fn f() { crate::high::HighType::new(); }
}
#[cfg(all(test, not(keel_loom)))]
fn helper() { crate::high::HighType::new(); }
#[test]
fn t() { crate::high::HighType::new(); }
pub struct LowType;
"##;
    let report = tree(&[("low.rs", low)]);
    assert_eq!(problems(&report), Vec::<&str>::new());
    assert_eq!(report.paths, 1, "the path under cfg(keel_loom) is read");
    // The same code under `cfg(keel_loom)` is real code: the three fail the check.
    let loom = low.replace("cfg(test)", "cfg(keel_loom)").replace("all(test, not(keel_loom))", "keel_loom");
    assert_eq!(tree(&[("low.rs", &loom)]).problems.len(), 3);
}

#[test]
fn an_unplaced_module_fails() {
    let report = tree(&[("extra/mod.rs", "")]);
    assert_eq!(problems(&report), ["core/src/extra/mod.rs: place extra in a layer in lib.rs's # Layers block"]);
}

#[test]
fn a_missing_block_skips_and_a_stale_block_fails() {
    let files = [("lib.rs", "//! keel\nmod low;\n"), ("low.rs", "")].map(|(f, s)| (f.to_string(), s.to_string()));
    assert!(check(&files).is_none());
    let stale = tree(&[("lib.rs", "//! # Layers\n//! ```text\n//! 1 low low gone\n//! 2 high high\n//! ```\n")]);
    let expected = "core/src/lib.rs: # Layers lists gone, not a module (layer 1 low)";
    assert!(stale.problems.iter().any(|p| p == expected), "{:?}", stale.problems);
}
