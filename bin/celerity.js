#!/usr/bin/env node
// The CLI and the app modules it loads are TypeScript; tsx's loader runs them
// without a build step.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
