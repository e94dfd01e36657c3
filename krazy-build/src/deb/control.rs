//! The package's `control` file: its fields, parsed from RFC 822-style
//! text, and the package name and version they give.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead, Read};
use std::path::Path;

use super::ar::{read_err, walk_member};
use super::extract::read_limited;
use super::DebError;

/// Largest control file read into memory.
const MAX_CONTROL: u64 = 1 << 20;

/// The fields of a package's `control` file (`Package`, `Version`,
/// `Architecture`, `Depends`, …), continuation lines joined.
pub fn control_fields<R: Read>(r: R, deb: &Path) -> Result<BTreeMap<String, String>, DebError> {
    let mut text = None;
    let mut total = 0;
    walk_member(r, deb, "control", |path, entry| {
        if path == "control" {
            let b = read_limited(entry, deb, path, MAX_CONTROL, &mut total)?;
            text = Some(String::from_utf8_lossy(&b).into_owned());
        }
        Ok(())
    })?;
    let text = text.ok_or(DebError::MissingControlField {
        deb: deb.to_path_buf(),
        field: "control file",
    })?;
    Ok(parse_control(&text))
}

/// Parses RFC 822-style control text (one stanza) into fields.
pub fn parse_control(text: &str) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in io::Cursor::new(text).lines().map_while(Result::ok) {
        if line.is_empty() {
            if !fields.is_empty() {
                break;
            }
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(k) = &last {
                if let Some(v) = fields.get_mut(k) {
                    let v: &mut String = v;
                    v.push('\n');
                    v.push_str(line.trim());
                }
            }
        } else if let Some((k, v)) = line.split_once(':') {
            fields.insert(k.trim().to_string(), v.trim().to_string());
            last = Some(k.trim().to_string());
        }
    }
    fields
}

/// The package name and version from a `.deb` file's control file.
pub fn package_id(deb: &Path) -> Result<(String, String), DebError> {
    let f = fs::File::open(deb).map_err(|e| read_err(deb, e))?;
    let fields = control_fields(f, deb)?;
    let get = |field: &'static str| {
        fields
            .get(field)
            .cloned()
            .ok_or(DebError::MissingControlField {
                deb: deb.to_path_buf(),
                field,
            })
    };
    Ok((get("Package")?, get("Version")?))
}
