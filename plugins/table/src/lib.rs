//! Filter, sort, group and summarise tabular data.
