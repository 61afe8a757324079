//! # mesh-consensus
//!
//! Simplex BFT consensus as a pure state machine. Not built yet (issue 3).
