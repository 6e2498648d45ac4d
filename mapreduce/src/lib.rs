//! kv-mapreduce: a MapReduce batch client of the store (Lab 1).
//!
//! A coordinator hands map and reduce tasks to worker processes, re-issues the tasks of
//! workers that die or stall, and reports progress. Input comes from files or from a key
//! range of the store; output goes into the store.
