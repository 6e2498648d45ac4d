//! Sweep determinism (in progress).
