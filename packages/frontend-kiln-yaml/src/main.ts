#!/usr/bin/env node
// The kiln.yaml frontend as its own tier: `node dist/main.js --nats ... --tlscacert ...` (see docs/FRONTENDS.md).
import { runFrontendMain } from '@kiln/frontend-sdk';
import { kilnYamlFrontend } from './kiln-yaml-frontend.js';

await runFrontendMain(kilnYamlFrontend);
