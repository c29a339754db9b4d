#!/bin/bash
# a selftest helper with typical problems
ret=0
for f in $(ls *.txt); do
	echo $f
done
if [ $ret == 0 ]; then
	cd /tmp
fi
local_var=1
echo "done"
