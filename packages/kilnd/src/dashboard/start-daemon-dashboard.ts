import type { Client } from '@connectrpc/connect';
import type { control } from '@kiln/api';
import type { Address, Logger } from '@kiln/common';
import { rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { startDashboard } from './dashboard-server.js';

/** Where the built front end lives: packages/dashboard-ui/dist, found through the workspace link (also in a staged install). */
export function dashboardAssetsDir(): string {
  return join(dirname(createRequire(import.meta.url).resolve('@kiln/dashboard-ui/package.json')), 'dist');
}

/**
 * Starts `--dashboard` for a daemon serving Control: the URL with its
 * token goes to ROOT/dashboard.url (mode 0600, in the root-only state
 * dir); the log names the address and that file, never the token.
 */
export async function startDaemonDashboard(address: Address, controlClient: Client<typeof control.ControlService>, root: string, logger: Logger): Promise<{ readonly url: string; close(): Promise<void> }> {
  const log = logger.child({ component: 'dashboard' });
  const dashboard = await startDashboard({ address, control: controlClient, assetsDir: dashboardAssetsDir(), logger: log });
  const urlFile = join(root, 'dashboard.url');
  writeFileSync(urlFile, `${dashboard.url}\n`, { mode: 0o600 });
  log.info({ addr: `http://127.0.0.1:${dashboard.port}/`, urlFile }, `dashboard ready: open the URL in ${urlFile} (it carries this start's access token)`);
  return {
    url: dashboard.url,
    async close() {
      await dashboard.close();
      rmSync(urlFile, { force: true });
    },
  };
}
