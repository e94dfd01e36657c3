//! Benchmarks live in `benches/`; this crate has no library code.
pub mod sample_tree;
