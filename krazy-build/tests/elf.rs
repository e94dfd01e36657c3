//! The ELF check against real binaries: the system's dynamic /bin/ls, C
//! programs linked with and without -static (glibc and musl-gcc), a static
//! musl Rust program, an object file, and an aarch64 program when the
//! aarch64 musl target is installed.

mod common;

use krazy_build::elf::{check_static, Arch, ElfError};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn c_program(dir: &Path, name: &str, cc: &str, args: &[&str]) -> Option<PathBuf> {
    let src = dir.join("p.c");
    fs::write(&src, "#include <stdio.h>\n#include <math.h>\nint main(int c, char **v){printf(\"%f\\n\", sqrt((double)c)); return 0;}\n").unwrap();
    let out = dir.join(name);
    let st = Command::new(cc)
        .args(args)
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .arg("-lm")
        .status()
        .ok()?;
    st.success().then_some(out)
}

#[test]
fn system_ls_is_dynamic_and_the_error_says_how_to_fix() {
    let e = check_static(Path::new("/bin/ls"), Arch::X86_64).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ElfError::Dynamic { .. }), "{msg}");
    assert!(msg.contains("/bin/ls"), "{msg}");
    assert!(msg.contains("libc.so.6"), "{msg}");
    assert!(
        msg.contains("x86_64-unknown-linux-musl") && msg.contains("+crt-static"),
        "{msg}"
    );
    // And for an aarch64 image, the architecture is what is wrong first.
    let e = check_static(Path::new("/bin/ls"), Arch::Aarch64).unwrap_err();
    assert!(matches!(e, ElfError::WrongArch { .. }), "{e}");
    assert!(e.to_string().contains("aarch64-unknown-linux-musl"), "{e}");
}

#[test]
fn c_programs_static_and_dynamic() {
    let t = tempfile::tempdir().unwrap();
    let dynamic = c_program(t.path(), "dyn", "cc", &[]).expect("cc works");
    let e = check_static(&dynamic, Arch::X86_64).unwrap_err();
    assert!(
        e.to_string().contains("libm.so.6") || e.to_string().contains("libc.so.6"),
        "{e}"
    );

    let stat =
        c_program(t.path(), "static", "cc", &["-static"]).expect("cc -static works (libc6-dev)");
    let info = check_static(&stat, Arch::X86_64).unwrap();
    assert!(!info.pie);

    let spie = c_program(t.path(), "static-pie", "cc", &["-static-pie", "-fPIE"])
        .expect("cc -static-pie works");
    let info = check_static(&spie, Arch::X86_64).unwrap();
    assert!(info.pie, "static-pie is ET_DYN without a loader");

    if let Some(musl) = c_program(t.path(), "musl", "musl-gcc", &["-static"]) {
        check_static(&musl, Arch::X86_64).unwrap();
    }

    // An object file is not a program.
    let obj = t.path().join("p.o");
    assert!(Command::new("cc")
        .arg("-c")
        .arg(t.path().join("p.c"))
        .arg("-o")
        .arg(&obj)
        .status()
        .unwrap()
        .success());
    let e = check_static(&obj, Arch::X86_64).unwrap_err();
    assert!(matches!(e, ElfError::NotExecutable { .. }), "{e}");

    // A text file.
    let sh = t.path().join("run.sh");
    fs::write(&sh, "#!/bin/sh\nexit 0\n").unwrap();
    assert!(matches!(
        check_static(&sh, Arch::X86_64),
        Err(ElfError::NotElf { .. })
    ));
    assert!(matches!(
        check_static(&t.path().join("missing"), Arch::X86_64),
        Err(ElfError::Read { .. })
    ));
}

fn has_target(triple: &str) -> bool {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .unwrap();
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
    Path::new(&sysroot)
        .join("lib/rustlib")
        .join(triple)
        .is_dir()
}

fn rust_program(dir: &Path, triple: &str) -> PathBuf {
    let src = dir.join("h.rs");
    fs::write(&src, "fn main() { println!(\"hi\"); }\n").unwrap();
    let out = dir.join(format!("h-{triple}"));
    let st = Command::new("rustc")
        .args([
            "--target",
            triple,
            "-C",
            "linker=rust-lld",
            "-C",
            "opt-level=0",
        ])
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    out
}

#[test]
fn rust_musl_programs() {
    let t = tempfile::tempdir().unwrap();
    if has_target("x86_64-unknown-linux-musl") {
        let p = rust_program(t.path(), "x86_64-unknown-linux-musl");
        check_static(&p, Arch::X86_64).unwrap();
        assert!(matches!(
            check_static(&p, Arch::Aarch64),
            Err(ElfError::WrongArch { .. })
        ));
    } else {
        common::skip("x86_64 musl: `rustup target add x86_64-unknown-linux-musl` to run it");
    }
    if has_target("aarch64-unknown-linux-musl") {
        let p = rust_program(t.path(), "aarch64-unknown-linux-musl");
        check_static(&p, Arch::Aarch64).unwrap();
        let e = check_static(&p, Arch::X86_64).unwrap_err();
        assert!(e.to_string().contains("built for aarch64"), "{e}");
    } else {
        common::skip("aarch64: `rustup target add aarch64-unknown-linux-musl` to run it");
    }
}
