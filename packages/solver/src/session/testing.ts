import { create } from '@bufbuild/protobuf';
import { session } from '@kiln/api';
import { createChannel, silentLogger } from '@kiln/common';
import { SessionHost } from './session-host.js';

/**
 * For unit specs: a SessionHost with client sessions `ids` already attached
 * (a hello with no directories or outputs, never closed). A Solve naming one
 * of them then does not wait the attach timeout for a client that never comes.
 */
export function sessionHostWith(...ids: string[]): SessionHost {
  const host = new SessionHost(silentLogger());
  for (const sessionId of ids) {
    const requests = createChannel<session.AttachRequest>();
    requests.push(create(session.AttachRequestSchema, { msg: { case: 'hello', value: { sessionId } } }));
    void (async () => {
      for await (const _ of host.attach(requests)) void _;
    })();
  }
  return host;
}
