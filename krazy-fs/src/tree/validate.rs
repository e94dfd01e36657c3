//! Checking a tree against a format's [`NameRules`] once, and the
//! [`Validated`] view of sorted children that writers walk.

use super::*;

/// The limits of one format, checked by [`Tree::validate`].
#[derive(Debug, Clone)]
pub struct NameRules {
    /// The format's name, for messages.
    pub format: &'static str,
    /// Longest name in bytes of UTF-8, if limited.
    pub max_name_bytes: Option<usize>,
    /// Longest name in UTF-16 code units, if limited (FAT long names: 255).
    pub max_name_utf16: Option<usize>,
    /// Characters a name may not contain (besides `/` and NUL, never allowed).
    pub forbidden_chars: &'static [char],
    /// Whether names must be valid UTF-8 and differ other than by case.
    pub case_insensitive: bool,
    /// Whether character devices can be stored.
    pub devices: bool,
    /// Whether symlinks can be stored.
    pub symlinks: bool,
}

impl NameRules {
    /// Rules that accept everything a Unix file system can hold.
    pub const UNIX: NameRules = NameRules {
        format: "unix",
        max_name_bytes: Some(255),
        max_name_utf16: None,
        forbidden_chars: &[],
        case_insensitive: false,
        devices: true,
        symlinks: true,
    };
}

impl Tree {
    /// Checks the whole tree against `rules` and returns the hierarchy that
    /// writers walk. Fails on the first problem, naming its path.
    pub fn validate(&self, rules: &NameRules) -> Result<Validated<'_>, TreeError> {
        let mut nodes = Vec::with_capacity(self.entries.len() + 1);
        nodes.push(Node {
            path: "",
            name: "",
            entry: &self.root,
            parent: 0,
            children: Vec::new(),
        });
        let mut index: BTreeMap<&str, usize> = BTreeMap::new();
        index.insert("", 0);
        // BTreeMap order puts "a" before "a/b" but "a-b" between them;
        // parents always sort before their children, which is all we need.
        for (path, entry) in &self.entries {
            let (parent_path, name) = match path.rfind('/') {
                Some(i) => (&path[..i], &path[i + 1..]),
                None => ("", path.as_str()),
            };
            let Some(&parent) = index.get(parent_path) else {
                return Err(TreeError::MissingParent {
                    path: path.clone(),
                    parent: parent_path.to_string(),
                });
            };
            if !nodes[parent].entry.is_dir() {
                return Err(TreeError::ParentNotDirectory {
                    path: path.clone(),
                    parent: parent_path.to_string(),
                });
            }
            check_name(path, name, entry, rules)?;
            let id = nodes.len();
            nodes.push(Node {
                path,
                name,
                entry,
                parent,
                children: Vec::new(),
            });
            nodes[parent].children.push(id);
            index.insert(path, id);
        }
        for i in 0..nodes.len() {
            let mut children = std::mem::take(&mut nodes[i].children);
            children.sort_by(|&a, &b| nodes[a].name.as_bytes().cmp(nodes[b].name.as_bytes()));
            if rules.case_insensitive {
                let mut seen: BTreeMap<String, usize> = BTreeMap::new();
                for &c in &children {
                    if let Some(&o) = seen.get(&nodes[c].name.to_lowercase()) {
                        return Err(TreeError::CaseCollision {
                            path: nodes[c].path.to_string(),
                            other: nodes[o].path.to_string(),
                            format: rules.format,
                        });
                    }
                    seen.insert(nodes[c].name.to_lowercase(), c);
                }
            }
            nodes[i].children = children;
        }
        Ok(Validated { nodes })
    }
}

fn check_name(path: &str, name: &str, entry: &Entry, rules: &NameRules) -> Result<(), TreeError> {
    let too_long = |max, unit| TreeError::NameTooLong {
        path: path.to_string(),
        format: rules.format,
        max,
        unit,
    };
    if let Some(max) = rules.max_name_bytes {
        if name.len() > max {
            return Err(too_long(max, "bytes"));
        }
    }
    if let Some(max) = rules.max_name_utf16 {
        if name.encode_utf16().count() > max {
            return Err(too_long(max, "UTF-16 code units"));
        }
    }
    if let Some(c) = name.chars().find(|c| rules.forbidden_chars.contains(c)) {
        return Err(TreeError::BadName {
            path: path.to_string(),
            format: rules.format,
            reason: format!("contains {c:?}"),
        });
    }
    let unsupported = match entry.kind {
        Kind::CharDevice { .. } if !rules.devices => true,
        Kind::Symlink(_) if !rules.symlinks => true,
        _ => false,
    };
    if unsupported {
        return Err(TreeError::UnsupportedKind {
            path: path.to_string(),
            kind: entry.kind.name(),
            format: rules.format,
        });
    }
    Ok(())
}

/// One entry of a validated tree.
#[derive(Debug)]
pub struct Node<'a> {
    /// Full path without a leading `/` (`""` for the root).
    pub path: &'a str,
    /// Last path component (`""` for the root).
    pub name: &'a str,
    /// The entry.
    pub entry: &'a Entry,
    /// Index of the parent node (the root is its own parent).
    pub parent: usize,
    /// Indices of the children, sorted by name bytes.
    pub children: Vec<usize>,
}

/// A tree that passed [`Tree::validate`]: nodes with parent and child links.
/// Node 0 is the root; parents come before their children.
#[derive(Debug)]
pub struct Validated<'a> {
    /// All nodes; index 0 is the root.
    pub nodes: Vec<Node<'a>>,
}

impl<'a> Validated<'a> {
    /// The root node.
    pub fn root(&self) -> &Node<'a> {
        &self.nodes[0]
    }

    /// The node at index `i`.
    pub fn node(&self, i: usize) -> &Node<'a> {
        &self.nodes[i]
    }

    /// The children of node `i`, sorted by name bytes.
    pub fn children(&self, i: usize) -> impl Iterator<Item = &Node<'a>> {
        self.nodes[i].children.iter().map(|&c| &self.nodes[c])
    }
}
