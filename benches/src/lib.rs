//! Benchmarks live in `benches/`; this library holds only the shared sample tree they use.
pub mod sample_tree;
