#!/bin/sh
echo "hello from a Kiln-built image: $(wc -l < /app/sorted.txt 2>/dev/null || wc -l < sorted.txt) words"
