-- wrk script for benchmarks/net.py: checks every response and prints a JSON summary.
-- A response counts as bad unless its status is 200 and its body is exactly `expected`
-- (the body the benchmark's HTTP server sends; see _net_servers.py).
local expected = "Hello, World!"
bad = 0
first_bad = ""
local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function response(status, headers, body)
   if status ~= 200 or body ~= expected then
      if bad == 0 then
         first_bad = string.format("status %d, body %q", status, string.sub(body or "", 1, 80))
      end
      bad = bad + 1
   end
end

function done(summary, latency, requests)
   local nbad, first = 0, ""
   for _, t in ipairs(threads) do
      local b = t:get("bad") or 0
      if b > 0 and first == "" then first = t:get("first_bad") or "" end
      nbad = nbad + b
   end
   local e = summary.errors
   io.write(string.format(
      '@@WRK@@{"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, ' ..
      '"read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d, ' ..
      '"bad_responses": %d, "first_bad": "%s", "latency_us": {"p50": %.1f, "p90": %.1f, ' ..
      '"p99": %.1f, "max": %.1f}}\n',
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
      e.status, e.timeout, nbad, string.gsub(first, '[\\"]', '\\%0'),
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
