INSERT INTO orgs (id, name) VALUES ($1, $2)
