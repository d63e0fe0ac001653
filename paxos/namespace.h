// The namespaces the core and the node loop are compiled in. The
// production core (targets paxos, ordo_node) and the simulator's copies
// with the mutants (paxos_sim, ordo_node_sim: ORDO_PAXOS_BUGS, which adds
// Config::bug and NodeLoop::Options::bug) compile the same sources into
// different layouts. Each goes into an inline namespace of its own, so
// code names `ordo::paxos::Replica` either way, a program that links both
// still has one definition of everything, and code that mixes the two
// copies' types does not compile.
#pragma once

#ifdef ORDO_PAXOS_BUGS
#define ORDO_PAXOS_NAMESPACE ordo::paxos::inline mutants
#define ORDO_NODE_NAMESPACE ordo::node::inline mutants
#else
#define ORDO_PAXOS_NAMESPACE ordo::paxos::inline production
#define ORDO_NODE_NAMESPACE ordo::node::inline production
#endif
