//! `include/keel.h` is what cbindgen makes of this crate now: regenerates it and fails on
//! any difference (`KEEL_BLESS=1` rewrites the checked-in file instead).

#[test]
fn header_is_current() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let config = cbindgen::Config::from_file(format!("{dir}/cbindgen.toml")).expect("cbindgen.toml");
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen could not read the crate")
        .write(&mut out);
    let fresh = String::from_utf8(out).expect("the header is UTF-8");
    let path = format!("{dir}/include/keel.h");
    if std::env::var_os("KEEL_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("write keel.h");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    if checked_in != fresh {
        let line = checked_in.lines().zip(fresh.lines()).position(|(a, b)| a != b).map_or(0, |i| i + 1);
        panic!(
            "linker/include/keel.h differs from the generated header (first at line {line}); \
             run `KEEL_BLESS=1 cargo test -p keel-ffi --test header` and commit it"
        );
    }
}
