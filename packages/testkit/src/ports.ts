import { createServer } from 'node:net';

/**
 * A TCP port that was free a moment ago on `host` (default 127.0.0.1): the OS
 * picks it for a listener on port 0, which is then closed. Another process
 * may take it before the caller binds it, so launchers retry on "address in use".
 */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, host, () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close((err) => (err ? reject(err) : port ? resolve(port) : reject(new Error('failed to find a free port'))));
    });
  });
}
