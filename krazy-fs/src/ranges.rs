//! Lists of byte ranges, as [`ext4::used_ranges`](crate::ext4::used_ranges)
//! returns them and a copier that skips the rest consumes them.

use std::ops::Range;

/// Sorted, without empty ranges, overlapping and touching ones merged.
///
/// ```
/// assert_eq!(krazy_fs::ranges::normalize(vec![5..7, 0..2, 1..3, 7..9, 4..4]), [0..3, 5..9]);
/// ```
pub fn normalize(mut v: Vec<Range<u64>>) -> Vec<Range<u64>> {
    v.retain(|r| r.start < r.end);
    v.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}
