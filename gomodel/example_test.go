package gomodel_test

import (
	"fmt"
	"strings"

	"github.com/ppkit/ppkit/gomodel"
)

func ExampleRun() {
	sc, err := gomodel.ParseScenario(strings.NewReader(`
variant rfc unhandled
pool rxq
rx to rxq
rx from rxq
coalesce to from
kfree to
expect violation dma-mapped-page-freed
`), "coalesce.scn")
	if err != nil {
		fmt.Println(err)
		return
	}
	res, err := gomodel.Run(sc, sc.Config)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, v := range res.Violations {
		fmt.Printf("line %d: %s (%s)\n", v.Line, v.Name, v.Op)
	}
	fmt.Println("passed:", res.Passed)
	// Output:
	// line 6: pool-page-in-frag (coalesce to from)
	// line 7: dma-mapped-page-freed (kfree to)
	// passed: true
}

func ExampleCheckTrace() {
	trace := `# tracer: nop
          <idle>-0       [000] ..s.   100.000137: page_pool_state_hold: page_pool=00000000b5f1c7a2 page=00000000aa000001 pfn=262144 hold=1
          <idle>-0       [000] ..s.   100.000200: page_pool_skb_return: page_pool=00000000b5f1c7a2 page=00000000aa000002 pfn=77777
`
	rep, err := gomodel.CheckTrace(strings.NewReader(trace), gomodel.TraceOptions{File: "t.trace", Packets: 1000})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, v := range rep.Violations {
		fmt.Printf("line %d: %s: %s\n", v.Line, v.Name, v.Detail)
	}
	p := rep.Pools[0]
	fmt.Printf("%s: holds %d, skb returns %d, inflight %d; %.1f slow-path allocations per 1000 packets\n",
		p.Pool, p.Holds, p.SKBReturns, p.Inflight, rep.SlowPathPer1k)
	// Output:
	// line 3: foreign-page-returned: the return hook hands pfn 77777 to pool 00000000b5f1c7a2, a page that pool never held
	// 00000000b5f1c7a2: holds 1, skb returns 1, inflight 1; 1.0 slow-path allocations per 1000 packets
}
