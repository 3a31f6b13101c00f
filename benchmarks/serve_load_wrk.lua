-- wrk script for benchmarks/serve_load_wrk.sh: POST /v1/recommend for random users u0..u9999 of the
-- synthetic bundle, with the API key; non-2xx answers are counted by wrk ("Non-2xx or 3xx responses").
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = os.getenv("PRISMREC_API_KEY") or "load-test-key"
math.randomseed(0)
request = function()
  return wrk.format(nil, "/v1/recommend", nil, string.format('{"user": "u%d", "k": 10}', math.random(0, 9999)))
end
