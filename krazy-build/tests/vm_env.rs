//! Discovery through the real environment variables. This binary holds a
//! single test because it changes the process environment, which is not
//! safe while other threads read it.

use krazy_build::vm::{discover, Discovery, VmError};
use std::path::PathBuf;

#[test]
fn env_overrides_are_honoured_and_missing_paths_name_the_package() {
    std::env::set_var("KRAZY_QEMU", "/nonexistent/qemu");
    let msg = discover().unwrap_err().to_string();
    assert!(msg.contains("KRAZY_QEMU=/nonexistent/qemu"), "{msg}");
    assert!(msg.contains("apt-get install qemu-system-x86"), "{msg}");
    assert!(msg.contains("--allow-downgrades qemu-utils="), "{msg}");

    std::env::set_var("KRAZY_QEMU", "/usr/bin/qemu-system-x86_64");
    std::env::set_var("KRAZY_OVMF_CODE", "/nonexistent/OVMF_CODE.fd");
    std::env::set_var("KRAZY_OVMF_VARS", "/usr/share/OVMF/OVMF_VARS_4M.fd");
    let e = discover().unwrap_err();
    assert!(
        matches!(
            &e,
            VmError::OvmfOverrideMissing {
                var: "KRAZY_OVMF_CODE",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("apt-get install ovmf"), "{e}");

    std::env::remove_var("KRAZY_OVMF_VARS");
    let e = discover().unwrap_err();
    assert!(
        matches!(&e, VmError::OvmfOverrideIncomplete { .. }),
        "{e:?}"
    );

    // The overrides win over the standard paths.
    std::env::set_var("KRAZY_OVMF_CODE", "/usr/share/OVMF/OVMF_CODE.fd");
    std::env::set_var("KRAZY_OVMF_VARS", "/usr/share/OVMF/OVMF_VARS.fd");
    let t = discover().unwrap();
    assert_eq!(t.qemu, PathBuf::from("/usr/bin/qemu-system-x86_64"));
    assert_eq!(t.ovmf.code, PathBuf::from("/usr/share/OVMF/OVMF_CODE.fd"));

    // Empty values count as unset: the standard 4 MiB pair and PATH.
    for v in ["KRAZY_QEMU", "KRAZY_OVMF_CODE", "KRAZY_OVMF_VARS"] {
        std::env::set_var(v, "");
    }
    let d = Discovery::from_env();
    assert_eq!(d.qemu_override, None);
    let t = d.find().unwrap();
    assert!(t.qemu.ends_with("qemu-system-x86_64"), "{t:?}");
    assert_eq!(
        t.ovmf.code,
        PathBuf::from("/usr/share/OVMF/OVMF_CODE_4M.fd")
    );
}
