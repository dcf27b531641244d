#!/bin/sh
# The stand-in's /lambda-entrypoint.sh, with the contract of AWS's Java base image: the handler
# (package.Class::method) is the one argument, and the Java runtime interface client runs it
# against the Runtime API in $AWS_LAMBDA_RUNTIME_API.
if [ $# -ne 1 ]; then
  echo "entrypoint requires the handler name to be the first argument" >&2
  exit 142
fi
if [ -z "${AWS_LAMBDA_RUNTIME_API:-}" ]; then
  # AWS's image starts its Runtime Interface Emulator here; the stand-in has none.
  echo "AWS_LAMBDA_RUNTIME_API is not set: run this image under a Runtime API (n10n-dev invoke)" >&2
  exit 142
fi
export _HANDLER="$1"
# As AWS's Java bootstrap: a heap of 85% of the function's memory (a handler that runs out of
# it fails with java.lang.OutOfMemoryError, the runtime goes on), the serial collector and the
# first JIT tier only (a short-lived process starts faster).
heap_mb=$(( ${AWS_LAMBDA_FUNCTION_MEMORY_SIZE:-512} * 85 / 100 ))
exec java -XX:MaxHeapSize="${heap_mb}m" -XX:+UseSerialGC -Xshare:auto \
  -XX:+TieredCompilation -XX:TieredStopAtLevel=1 \
  -classpath '/var/runtime/lib/*' \
  com.amazonaws.services.lambda.runtime.api.client.AWSLambda "$_HANDLER"
