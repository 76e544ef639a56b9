// Minimal etcd write/read benchmark (clientv3), modelled on etcd tools/benchmark "put"/"range".
// Copied from the shared peers kit and extended (raftbox): -json prints one machine-readable result line,
// -maxdur bounds a benchmark run in time, -timeout sets the per-put timeout of -op loop. The load model is
// unchanged: -clients concurrent workers, each issuing one request at a time, spread over -conns gRPC
// connections (worker w uses connection w % conns).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/clientv3"
)

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(float64(len(d)-1) * p)
	return d[i]
}

func ms(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000
}

func main() {
	eps := flag.String("endpoints", "127.0.0.1:23791", "comma list")
	conns := flag.Int("conns", 1, "grpc connections")
	clients := flag.Int("clients", 1, "concurrent workers")
	total := flag.Int("total", 2000, "total requests")
	vsize := flag.Int("val", 100, "value size")
	op := flag.String("op", "put", "put|get|getser|loop")
	dur := flag.Duration("dur", 10*time.Second, "loop duration")
	maxdur := flag.Duration("maxdur", 0, "stop a put/get run after this long even if -total is not reached (0: no limit)")
	timeout := flag.Duration("timeout", 100*time.Millisecond, "per-put timeout of -op loop")
	asJSON := flag.Bool("json", false, "print the result as one JSON object")
	flag.Parse()
	if *conns < 1 {
		*conns = 1
	}
	if *clients < 1 {
		*clients = 1
	}
	cs := make([]*clientv3.Client, *conns)
	for i := range cs {
		c, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(*eps, ","), DialTimeout: 5 * time.Second})
		if err != nil {
			fmt.Println("dial", err)
			os.Exit(1)
		}
		cs[i] = c
	}
	val := strings.Repeat("v", *vsize)
	ctx := context.Background()
	if *op == "get" || *op == "getser" {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := cs[0].Put(cctx, "bench/k0", val)
		cancel()
		if err != nil {
			fmt.Println("seed put", err)
			os.Exit(1)
		}
	}
	if *op == "loop" {
		// failover probe: sequential puts with -timeout for -dur; print success/failure timestamps (unix ns)
		end := time.Now().Add(*dur)
		for i := 0; time.Now().Before(end); i++ {
			cctx, cancel := context.WithTimeout(ctx, *timeout)
			t0 := time.Now()
			_, err := cs[0].Put(cctx, fmt.Sprintf("fo/%d", i), val)
			cancel()
			if err != nil {
				fmt.Printf("err %d %d\n", t0.UnixNano(), time.Now().UnixNano())
			} else {
				fmt.Printf("ok %d %d\n", t0.UnixNano(), time.Now().UnixNano())
			}
		}
		return
	}
	if *op != "put" && *op != "get" && *op != "getser" {
		fmt.Println("unknown -op", *op)
		os.Exit(2)
	}
	lat := make([][]time.Duration, *clients)
	var wg sync.WaitGroup
	per := *total / *clients
	errs := 0
	var mu sync.Mutex
	start := time.Now()
	var deadline time.Time
	if *maxdur > 0 {
		deadline = start.Add(*maxdur)
	}
	for w := 0; w < *clients; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c := cs[w%len(cs)]
			l := make([]time.Duration, 0, 1024)
			for i := 0; i < per; i++ {
				if *maxdur > 0 && time.Now().After(deadline) {
					break
				}
				t0 := time.Now()
				var err error
				switch *op {
				case "put":
					_, err = c.Put(ctx, fmt.Sprintf("bench/%d/%d", w, i), val)
				case "get":
					_, err = c.Get(ctx, "bench/k0")
				case "getser":
					_, err = c.Get(ctx, "bench/k0", clientv3.WithSerializable())
				}
				if err != nil {
					mu.Lock()
					errs++
					mu.Unlock()
					continue
				}
				l = append(l, time.Since(t0))
			}
			lat[w] = l
		}(w)
	}
	wg.Wait()
	el := time.Since(start)
	all := []time.Duration{}
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	var mx time.Duration
	if len(all) > 0 {
		mx = all[len(all)-1]
	}
	rps := float64(len(all)) / el.Seconds()
	if *asJSON {
		out, _ := json.Marshal(map[string]interface{}{
			"op": *op, "clients": *clients, "conns": *conns, "val": *vsize, "n": len(all), "errs": errs,
			"elapsed_s": el.Seconds(), "rps": rps, "p50_ms": ms(pct(all, 0.5)), "p99_ms": ms(pct(all, 0.99)),
			"max_ms": ms(mx),
		})
		fmt.Println(string(out))
		return
	}
	fmt.Printf("op=%s clients=%d conns=%d val=%d n=%d errs=%d elapsed=%.2fs rps=%.0f p50=%.2fms p99=%.2fms max=%.2fms\n",
		*op, *clients, *conns, *vsize, len(all), errs, el.Seconds(), rps,
		ms(pct(all, 0.5)), ms(pct(all, 0.99)), ms(mx))
}
