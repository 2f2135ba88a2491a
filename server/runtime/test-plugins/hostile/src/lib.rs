//! A deliberately hostile plugin used by the runtime's sandbox tests.
