//! The runtime's black-box tests: real components built from source by
//! `cairn-test-plugins`, real HTTP servers on 127.0.0.1.

mod attacks;
mod cache;
mod capabilities;
mod ceiling;
mod egress;
mod examples;
mod heap;
mod helpers;
