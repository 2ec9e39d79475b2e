import { CelerityError } from '../errors.ts';

/**
 * The dashboard's assets are missing: the package was run from a checkout
 * that was never built (`npm run build` makes them; a published package
 * ships them).
 */
export class DashboardNotBuiltError extends CelerityError {
  readonly code = 'dashboard_not_built';
  override readonly httpStatus = 503;

  constructor(dir: string) {
    super(`The dashboard's assets are not built (no manifest in ${dir}): run \`npm run build\` in the celerity package`, { dir });
  }
}
