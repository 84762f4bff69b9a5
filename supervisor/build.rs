//! Links lwsysd with `hot-text.ld`, which gathers the functions an idle
//! daemon runs into one block of text: the kernel maps 64 KiB around each
//! page fault, so scattered through the binary those ~1300 functions made
//! nearly all 3.5 MB of text resident (docs/footprint.md, "Hot text";
//! issue 19). The script only adds an output section before `.text`
//! (`INSERT BEFORE`) and changes no code: a name it lists that is not in
//! the build matches nothing. bench/hot-text.py regenerates it.

fn main() {
    println!("cargo:rerun-if-changed=hot-text.ld");
    println!("cargo:rerun-if-changed=build.rs");
    // Linker scripts with INSERT are ELF linkers' (lld's and GNU ld's);
    // lwsysd is built for Linux.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".to_owned());
        println!("cargo:rustc-link-arg-bin=lwsysd=-Wl,-T,{dir}/hot-text.ld");
    }
}
