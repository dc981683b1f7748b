#!/bin/bash
# rss.sh CMD...: runs CMD, samples /proc/PID/status every 0.2 s; prints wall, VmHWM, peak RssAnon, peak RssFile (MiB)
start=$(date +%s.%N)
"$@" > /tmp/rss.out 2>&1 & pid=$!
pa=0; pf=0; hwm=0
while kill -0 $pid 2>/dev/null; do
  if [ -r /proc/$pid/status ]; then
    a=$(awk '/RssAnon/{print $2}' /proc/$pid/status 2>/dev/null); f=$(awk '/RssFile/{print $2}' /proc/$pid/status 2>/dev/null); h=$(awk '/VmHWM/{print $2}' /proc/$pid/status 2>/dev/null)
    [ -n "$a" ] && [ "$a" -gt "$pa" ] && pa=$a; [ -n "$f" ] && [ "$f" -gt "$pf" ] && pf=$f; [ -n "$h" ] && [ "$h" -gt "$hwm" ] && hwm=$h
  fi
  sleep 0.2
done
wait $pid; rc=$?
end=$(date +%s.%N)
printf "rc=%d wall=%.1fs VmHWM=%dMiB peakRssAnon=%dMiB peakRssFile=%dMiB\n" $rc $(echo "$end - $start" | bc) $((hwm/1024)) $((pa/1024)) $((pf/1024))
