// Package scrub will hold lockstep's background jobs: scrub (check and
// repair), rebuild onto a new member and resync of dirty regions, each taking
// one idempotent, checkpointed stripe step at a time under a throttle. It is
// empty until those jobs land.
package scrub
