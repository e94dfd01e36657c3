//! Unit tests of building, validating and reading trees.

use super::*;

#[test]
fn validate_orders_children_and_finds_problems() {
    let mut t = Tree::new();
    t.add_dir("a", 0o755, 0).unwrap();
    t.add_file("a/z", Contents::bytes("z"), 0o644, 0).unwrap();
    t.add_file("a/b", Contents::bytes("b"), 0o644, 0).unwrap();
    t.add_file("a-b", Contents::bytes(""), 0o644, 0).unwrap();
    let v = t.validate(&NameRules::UNIX).unwrap();
    let a = v.children(0).find(|n| n.name == "a").unwrap();
    let names: Vec<_> = a.children.iter().map(|&c| v.node(c).name).collect();
    assert_eq!(names, ["b", "z"]);

    assert!(matches!(
        t.add_file("/a/b", Contents::bytes(""), 0o644, 0),
        Err(TreeError::Duplicate { .. })
    ));
    t.add_file("x/y", Contents::bytes(""), 0o644, 0).unwrap();
    let e = t.validate(&NameRules::UNIX).unwrap_err();
    assert!(matches!(e, TreeError::MissingParent { ref parent, .. } if parent == "x"));
    t.remove("x/y");
    t.add_file("a/b/c", Contents::bytes(""), 0o644, 0).unwrap();
    assert!(matches!(
        t.validate(&NameRules::UNIX),
        Err(TreeError::ParentNotDirectory { .. })
    ));
}

#[test]
fn rules_and_paths() {
    for bad in ["", "/", "a//b", "a/./b", "../x", "a\0b"] {
        assert!(normalize(bad).is_err(), "{bad:?}");
    }
    let mut t = Tree::new();
    t.add_file(&"n".repeat(256), Contents::bytes(""), 0o644, 0)
        .unwrap();
    assert!(matches!(
        t.validate(&NameRules::UNIX),
        Err(TreeError::NameTooLong { .. })
    ));
    let mut t = Tree::new();
    t.add_file("A", Contents::bytes(""), 0o644, 0).unwrap();
    t.add_file("a", Contents::bytes(""), 0o644, 0).unwrap();
    let rules = NameRules {
        case_insensitive: true,
        ..NameRules::UNIX
    };
    assert!(matches!(
        t.validate(&rules),
        Err(TreeError::CaseCollision { .. })
    ));
    let mut t = Tree::new();
    t.add_dir_all("/a/b/c", 0).unwrap();
    t.add_dir_all("a/b/d", 0).unwrap();
    assert_eq!(t.len(), 4);
}
