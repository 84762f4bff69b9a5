//! Transition benchmarks (being written).

fn main() {}
