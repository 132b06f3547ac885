#!/bin/sh
cat /hello.txt
