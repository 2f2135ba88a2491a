//! `sqlx::migrate!` embeds the migrations when this crate compiles, and on stable Rust
//! Cargo cannot see that a new migration file should rebuild it: without this, a build
//! after a pull that adds a migration keeps the old set and the new tables never appear.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
