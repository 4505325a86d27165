// The type a generated dashboard JSON must have: @grafana/schema's Dashboard for the Grafana
// in docker-compose.yml, as it reads on the wire, with what that type leaves open filled in
// from the same package or from the Prometheus data source:
// - each panel's `options` and `fieldConfig.defaults.custom` by its panel plugin's schema
//   (the Dashboard type leaves both as `Record<string, unknown>`);
// - panel queries and the annotation as the Prometheus data source reads them (the schema
//   has no Prometheus query type: targets are `Record<string, unknown>` and an annotation's
//   `target` is the bare DataQuery, which has no `expr`).
// tests/test_dashboards.py writes one `const dashboard: DashboardJson = {...}` file per
// dashboard and runs `tsc --noEmit`.
import type {
  AnnotationQuery,
  DataQuery,
  Dashboard,
  FieldConfig,
  FieldConfigSource,
  Panel,
  RowPanel,
} from "@grafana/schema";
import type * as stat from "@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen";
import type * as table from "@grafana/schema/dist/esm/raw/composable/table/panelcfg/x/TablePanelCfg_types.gen";
import type * as timeseries from "@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen";

// JSON carries an enum's value, not the enum: `"absolute"` where the type says
// `ThresholdsMode.Absolute`. String enums become the union of their values; everything
// else keeps its shape, so unknown keys and wrong types are still errors.
export type Wire<T> = T extends string
  ? `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends ReadonlyArray<infer E>
      ? Array<Wire<E>>
      : T extends object
        ? { [K in keyof T]: Wire<T[K]> }
        : T;

// Grafana merges a panel's options and field config with the plugin's defaults, so any
// key may be left out; a key that is given must exist and have the plugin's type.
type Partly<T> = T extends string | number | boolean | null | undefined
  ? T
  : T extends ReadonlyArray<infer E>
    ? Array<Partly<E>>
    : T extends object
      ? { [K in keyof T]?: Partly<T[K]> }
      : T;

// A Prometheus query (PromQuery of Grafana's Prometheus data source, the fields a
// dashboard stores).
interface PromQuery extends DataQuery {
  expr: string;
  legendFormat?: string;
  range?: boolean;
  instant?: boolean;
  exemplar?: boolean;
  format?: "time_series" | "table" | "heatmap";
  interval?: string;
  intervalFactor?: number;
  editorMode?: "code" | "builder";
}

// A Prometheus annotation: the query in `target` (prepareAnnotation moves a top-level
// `expr` and `step` there); processEvents reads the formats from the annotation itself.
interface PromAnnotation extends Omit<AnnotationQuery, "target"> {
  target: PromQuery;
  titleFormat?: string;
  textFormat?: string;
  tagKeys?: string;
  useValueForTime?: boolean;
}

type PluginPanel<Kind extends string, Options, Custom> = Omit<
  Panel,
  "type" | "options" | "fieldConfig" | "targets"
> & {
  type: Kind;
  targets: PromQuery[];
  options: Partly<Options>;
  fieldConfig: Omit<FieldConfigSource, "defaults"> & {
    defaults: Omit<FieldConfig, "custom"> & { custom?: Partly<Custom> };
  };
};

type TypedPanel =
  | RowPanel
  | PluginPanel<"timeseries", timeseries.Options, timeseries.FieldConfig>
  | PluginPanel<"stat", stat.Options, never>
  | PluginPanel<"table", table.Options, table.FieldConfig>;

export type DashboardJson = Wire<
  Omit<Dashboard, "panels" | "annotations"> & {
    panels?: TypedPanel[];
    annotations?: { list?: PromAnnotation[] };
  }
>;
