//! Durability scenarios (in progress).
