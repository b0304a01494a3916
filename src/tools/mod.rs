//! Tools around the product: the demo and the benchmarks, both driven
//! against the built-in IM simulator.

pub mod bench;
pub mod demo;
