-- The cold tier's namespace inside the catalog (Spark: <catalog>.cold.<table>).
CREATE NAMESPACE IF NOT EXISTS {catalog}.{namespace};
