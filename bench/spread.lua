-- wrk script: every request names another Host, walking the list given as the first script argument
-- (one name per line) round-robin from a random starting point, so 64 connections touch all names.
local requests = {}
local next_index = 1

function init(args)
  for name in io.lines(args[1]) do
    requests[#requests + 1] = wrk.format("GET", "/", { Host = name })
  end
  -- a different start per thread: seed from the clock and this table's address
  local salt = tonumber(tostring(requests):match("0x(%x+)"), 16) or 0
  math.randomseed(os.time() + salt)
  next_index = math.random(#requests)
end

function request()
  next_index = next_index % #requests + 1
  return requests[next_index]
end
