//! lwsys supervisor library.
