//! The analyzer: a pure library over event sequences. It needs no root and no
//! kernel, so every rule is tested on hand-written or recorded events, and the
//! same code serves live capture, recordings and the terminal UI.

pub mod event;
