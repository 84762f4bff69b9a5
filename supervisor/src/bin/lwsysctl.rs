//! `lwsysctl`: the lwsys command-line client (being written).

fn main() {}
