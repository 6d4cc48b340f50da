-- Written once by a development-mode Moat; production then refuses this database.
INSERT INTO moat_dev_taint (marked_by)
VALUES ($1)
ON CONFLICT (id) DO NOTHING
