//! A small reference performer: the code an AVS developer copies.
//!
//! Will serve the Hourglass `PerformerService` (`ExecuteTask`, `StartSync`) and
//! `grpc.health.v1.Health` on `PORT` (default 8080, as Hourglass images do). It is used by the
//! demo, the end-to-end tests, and — built as a static binary in a `FROM scratch` image — by the
//! Docker runtime tests.
