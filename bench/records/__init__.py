"""Result records and what reads them: the record store, metric directions, compare, tables, figures."""
