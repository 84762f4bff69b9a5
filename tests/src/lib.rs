//! Test harness for driving a real `lwsysd`: [`TestDaemon`] starts it on a
//! temporary state dir and socket, and [`Client`] speaks JSON lines to it.
