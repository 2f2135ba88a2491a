//! Placeholder until the loop benchmark lands.
fn main() {}
