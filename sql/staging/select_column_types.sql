-- PostgreSQL only: the columns of a staged table (its qualified name) and their types without length,
-- as format_type names them ('character varying', 'timestamp without time zone'): a bulk load sends its
-- values in COPY's binary format only where each value's encoding matches its column's type exactly.
SELECT attribute.attname AS column_name, format_type(attribute.atttypid, NULL) AS column_type
FROM pg_attribute AS attribute
JOIN pg_class AS class ON class.oid = attribute.attrelid
WHERE attribute.attrelid = CAST(:table_name AS regclass)
    AND class.relnamespace = CAST('{stg}' AS regnamespace)
    AND attribute.attnum > 0
    AND NOT attribute.attisdropped
