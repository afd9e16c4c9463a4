# frozen_string_literal: true

# loggregator-agent's prom_scraper reads /var/vcap/jobs/*/config/prom_scraper_config.yml (port,
# source_id, instance_id, scheme, server_name, path; scheme defaults to https in its job, http in
# the scraper) and forwards what http://127.0.0.1:<port><path> serves to Loggregator. Every job
# whose binary runs a debug server (silk-ops::debug_server, which serves GET /metrics; its config
# carries debug_server_port) ships one, so cf-deployment collects the figures with no ops-file.
module BoshTemplate
  RSpec.describe 'prom_scraper_config.yml' do
    # job => [config template, manifest properties, links, port property, port default]
    def self.metrics_jobs
      {
        'silk-controller' => ['config/silk-controller.json',
                              { 'ca_cert' => 'CA', 'server_cert' => 'CERT', 'server_key' => 'KEY',
                                'database' => { 'type' => 'postgres', 'username' => 'u', 'password' => 'p',
                                                'host' => 'db', 'port' => 5524, 'name' => 'n' } },
                              ->(_) { [] }, 'debug_port', 46_455],
        'silk-daemon' => ['config/client-config.json',
                          { 'ca_cert' => 'CA', 'client_cert' => 'CERT', 'client_key' => 'KEY' },
                          ->(ctx) { [ctx.cf_network_link, ctx.vpa_link, ctx.iptables_link] }, 'debug_port', 22_233],
        'vxlan-policy-agent' => ['config/vxlan-policy-agent.json',
                                 { 'ca_cert' => 'CA', 'client_cert' => 'CERT', 'client_key' => 'KEY' },
                                 ->(ctx) { [ctx.cf_network_link, ctx.cni_config_link, ctx.iptables_link] },
                                 'debug_server_port', 8721]
      }
    end

    let(:instance) { InstanceSpec.new(ip: '10.0.16.15', id: 'b3f1c2d4-guid', networks: { 'default' => { 'ip' => '10.0.16.15' } }) }

    it 'is shipped by exactly the jobs whose configs carry a debug_server_port' do
      serving = release.job_names.select do |name|
        Dir[File.join(RELEASE_DIR, 'jobs', name, 'templates', '*.json.erb')].any? { |f| File.read(f).include?("'debug_server_port'") }
      end
      shipping = release.job_names.select { |name| release.job(name).spec['templates'].value?('config/prom_scraper_config.yml') }
      expect(serving.sort).to eq(self.class.metrics_jobs.keys.sort)
      expect(shipping.sort).to eq(serving.sort)
    end

    metrics_jobs.each do |name, (config_path, properties, links, port_property, port_default)|
      describe name do
        let(:job) { release.job(name) }
        let(:template) { job.template('config/prom_scraper_config.yml') }
        def render(props)
          YAML.safe_load(template.render(props, spec: instance))
        end

        it "points the scraper at the debug server's /metrics over http, under source_id #{name}" do
          expect(render(properties)).to eq(
            'port' => port_default, 'source_id' => name, 'instance_id' => 'b3f1c2d4-guid',
            'scheme' => 'http', 'path' => '/metrics'
          )
        end

        it 'uses the port the binary serves /metrics on' do
          [properties, properties.merge(port_property => 19_999)].each do |props|
            config = JSON.parse(job.template(config_path).render(props, consumes: links.call(self), spec: instance))
            expect(render(props)['port']).to eq(config.fetch('debug_server_port'))
          end
        end

        it 'renders nothing for the scraper to read when the job is disabled' do
          expect(template.render(properties.merge('disable' => true), spec: instance).strip).to eq('')
        end
      end
    end
  end
end
