//! End-to-end tests of avsnode: they run the real `avsnode` binary and the example performer over
//! real sockets on ephemeral ports, with a test aggregator client and shared fixtures. Later
//! issues add the Docker, SoftHSM and Prometheus suites here.
