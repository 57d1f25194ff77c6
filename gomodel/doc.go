// Package gomodel is ppkit's reference model of Linux 5.10's page_pool and of the skb paths that
// touch page_pool pages, with the SKB return hook in each of its designs (see Variant).
//
// The model is sequential and exact about what matters for the series: page refcounts, DMA
// mapping, which pool holds page_pool state on a page (pages_state_hold_cnt and
// pages_state_release_cnt), where a pool page sits (alloc cache, ptr_ring, in flight, freed),
// and which skb data areas and frags reference it. Every kernel behaviour the model mirrors names
// the 5.10 function it comes from; line numbers refer to Debian's linux-source-5.10 (5.10.223).
//
// Three entry points:
//   - ParseScenario and Run execute a scenario file (the language is described in README.md);
//   - Explore generates random operation sequences, reports the first violation and shrinks it
//     to a minimal scenario;
//   - CheckTrace replays a text ftrace of the page_pool tracepoints (plus the series'
//     page_pool_skb_return and kmem's mm_page_free) and reports the same named violations.
//
// The package is pure: no exec, no network, no file access beyond the readers it is given.
package gomodel
