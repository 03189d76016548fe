-- Add to /etc/prosody/prosody.cfg.lua (then: prosodyctl reload).
-- The secret must equal component.secret in barev-gateway.conf.
component_ports = { 5347 }
component_interfaces = { "127.0.0.1" }

Component "barev.example.org"
    component_secret = "change-me"
