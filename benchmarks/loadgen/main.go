// Command availability-loadgen drives one gRPC method of a server with pre-encoded
// requests and reports every call's latency as JSON, for the grpc benchmark.
//
// The benchmark builds the requests (protobuf bytes) in Python and gives them to this
// program, so the load generator needs no generated code and costs the shared 2-core
// machine far less CPU per call than a Python client: what the benchmark measures is
// the server, not the client.
//
// Requests file: each request as a uvarint length followed by that many bytes.
//
//	open loop:   -mode open -rate 2000 -seconds 10   (send each request at its scheduled
//	             time, whatever earlier calls do; latency counted from the schedule)
//	closed loop: -mode closed -in-flight 16 -seconds 10
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// rawCodec sends and receives messages as the bytes they already are.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

type report struct {
	Mode          string         `json:"mode"`
	Calls         int            `json:"calls"`
	Answered      int            `json:"answered"`
	Failures      map[string]int `json:"failures"`
	ElapsedS      float64        `json:"elapsed_s"`
	FromSchedule  []int64        `json:"from_schedule_us,omitempty"`
	RoundTrip     []int64        `json:"round_trip_us"`
	Found         int            `json:"found"`
	ResultsCounts map[int]int    `json:"results_per_answer"`
}

// inspect counts, in an answer, the entries of field 1 (results / availability) and
// how many of them say found=true (field 4 of ChannelAvailability).
func inspect(answer []byte) (entries int, found int) {
	for len(answer) > 0 {
		num, typ, n := protowire.ConsumeTag(answer)
		if n < 0 {
			return entries, found
		}
		answer = answer[n:]
		m := protowire.ConsumeFieldValue(num, typ, answer)
		if m < 0 {
			return entries, found
		}
		if num == 1 && typ == protowire.BytesType {
			entries++
			inner, _ := protowire.ConsumeBytes(answer)
			if isFound(inner) {
				found++
			}
		}
		answer = answer[m:]
	}
	return entries, found
}

func isFound(message []byte) bool {
	for len(message) > 0 {
		num, typ, n := protowire.ConsumeTag(message)
		if n < 0 {
			return false
		}
		message = message[n:]
		if num == 4 && typ == protowire.VarintType {
			v, _ := protowire.ConsumeVarint(message)
			return v != 0
		}
		m := protowire.ConsumeFieldValue(num, typ, message)
		if m < 0 {
			return false
		}
		message = message[m:]
	}
	return false
}

func readRequests(path string) ([][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := bufio.NewReader(f)
	var out [][]byte
	for {
		size, err := readUvarint(r)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		buf := make([]byte, size)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, fmt.Errorf("%s: truncated request: %w", path, err)
		}
		out = append(out, buf)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no request", path)
	}
	return out, nil
}

func readUvarint(r *bufio.Reader) (uint64, error) {
	var value uint64
	for shift := uint(0); ; shift += 7 {
		b, err := r.ReadByte()
		if err != nil {
			if shift > 0 && errors.Is(err, io.EOF) {
				return 0, io.ErrUnexpectedEOF
			}
			return 0, err
		}
		value |= uint64(b&0x7f) << shift
		if b < 0x80 {
			return value, nil
		}
		if shift > 56 {
			return 0, errors.New("request length varint too long")
		}
	}
}

type outcome struct {
	index   int
	sent    time.Time
	done    time.Time
	err     error
	entries int
	found   int
}

func main() {
	target := flag.String("target", "", "server host:port")
	method := flag.String("method", "", "full method, e.g. /availability.v1.AvailabilityService/GetAvailability")
	requestsPath := flag.String("requests", "", "file of uvarint-length-prefixed request messages")
	mode := flag.String("mode", "open", "open (fixed rate) or closed (fixed calls in flight)")
	rate := flag.Float64("rate", 1000, "open loop: requests per second")
	inFlight := flag.Int("in-flight", 1, "closed loop: calls outstanding at any time")
	seconds := flag.Float64("seconds", 10, "how long to send")
	timeout := flag.Duration("timeout", 10*time.Second, "deadline of each call")
	flag.Parse()
	if *target == "" || *method == "" || *requestsPath == "" {
		fmt.Fprintln(os.Stderr, "availability-loadgen: -target, -method and -requests are required")
		os.Exit(2)
	}
	requests, err := readRequests(*requestsPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "availability-loadgen:", err)
		os.Exit(2)
	}
	conn, err := grpc.NewClient(*target, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		fmt.Fprintln(os.Stderr, "availability-loadgen:", err)
		os.Exit(2)
	}
	defer conn.Close()
	call := func(index int) outcome {
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		defer cancel()
		request := requests[index%len(requests)]
		var answer []byte
		o := outcome{index: index, sent: time.Now()}
		o.err = conn.Invoke(ctx, *method, &request, &answer)
		o.done = time.Now()
		if o.err == nil {
			o.entries, o.found = inspect(answer)
		}
		return o
	}
	rep := report{Mode: *mode, Failures: map[string]int{}, ResultsCounts: map[int]int{}}
	var outcomes []outcome
	start := time.Now().Add(10 * time.Millisecond)
	var schedule func(int) time.Time
	switch *mode {
	case "open":
		if *rate <= 0 {
			fmt.Fprintln(os.Stderr, "availability-loadgen: -rate must be > 0")
			os.Exit(2)
		}
		interval := time.Duration(float64(time.Second) / *rate)
		schedule = func(n int) time.Time { return start.Add(time.Duration(n) * interval) }
		total := int(*rate * *seconds)
		if total < 1 {
			total = 1
		}
		results := make(chan outcome, total)
		for n := 0; n < total; n++ {
			if wait := time.Until(schedule(n)); wait > 0 {
				time.Sleep(wait)
			}
			go func(n int) { results <- call(n) }(n)
		}
		for n := 0; n < total; n++ {
			outcomes = append(outcomes, <-results)
		}
	case "closed":
		if *inFlight < 1 {
			fmt.Fprintln(os.Stderr, "availability-loadgen: -in-flight must be >= 1")
			os.Exit(2)
		}
		end := start.Add(time.Duration(*seconds * float64(time.Second)))
		var mu sync.Mutex
		var wg sync.WaitGroup
		next := 0
		time.Sleep(time.Until(start))
		for w := 0; w < *inFlight; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(end) {
					mu.Lock()
					n := next
					next++
					mu.Unlock()
					o := call(n)
					mu.Lock()
					outcomes = append(outcomes, o)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
	default:
		fmt.Fprintf(os.Stderr, "availability-loadgen: -mode %q: want open or closed\n", *mode)
		os.Exit(2)
	}
	last := start
	for _, o := range outcomes {
		if o.done.After(last) {
			last = o.done
		}
	}
	rep.Calls = len(outcomes)
	rep.ElapsedS = last.Sub(start).Seconds()
	for _, o := range outcomes {
		if o.err != nil {
			rep.Failures[status.Code(o.err).String()]++
			continue
		}
		rep.Answered++
		rep.Found += o.found
		rep.ResultsCounts[o.entries]++
		rep.RoundTrip = append(rep.RoundTrip, o.done.Sub(o.sent).Microseconds())
		if schedule != nil {
			rep.FromSchedule = append(rep.FromSchedule, o.done.Sub(schedule(o.index)).Microseconds())
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
		fmt.Fprintln(os.Stderr, "availability-loadgen:", err)
		os.Exit(1)
	}
}
