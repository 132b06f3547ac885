import { toJson } from '@bufbuild/protobuf';
import { control } from '@kiln/api';
import type { ProgressPrinter, TextSink } from './progress.js';

/** One JSON object (protobuf JSON of StatusResponse) per line. */
export function createRawJsonPrinter(out: TextSink): ProgressPrinter {
  return {
    write(status) {
      out.write(`${JSON.stringify(toJson(control.StatusResponseSchema, status))}\n`);
    },
    close() {},
  };
}
