// manifest-check decodes every object of a multi-document YAML stream (helm template's output) strictly
// against the Kubernetes API types: an unknown or misspelt field, a wrong type or an unknown kind fails,
// where kubectl's default decoding would silently drop it. Nothing is downloaded: the types are the pinned
// k8s.io/api and prometheus-operator modules of this tool's go.mod.
//
//	helm template ... | manifest-check
//
// Prints one line per object ("Kind/name") and exits 1 on the first object that does not decode.
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	sigsyaml "sigs.k8s.io/yaml"
)

type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
}

func target(apiVersion, kind string) any {
	switch apiVersion + "/" + kind {
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}
	case "v1/Secret":
		return &corev1.Secret{}
	case "v1/Service":
		return &corev1.Service{}
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}
	case "v1/Pod":
		return &corev1.Pod{}
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}
	case "networking.k8s.io/v1/NetworkPolicy":
		return &networkingv1.NetworkPolicy{}
	case "autoscaling/v2/HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}
	case "monitoring.coreos.com/v1/ServiceMonitor":
		return &monitoringv1.ServiceMonitor{}
	case "monitoring.coreos.com/v1/PrometheusRule":
		return &monitoringv1.PrometheusRule{}
	}
	return nil
}

func main() {
	reader := yaml.NewYAMLReader(bufio.NewReader(os.Stdin))
	count := 0
	for {
		doc, err := reader.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			fail("reading the stream: %v", err)
		}
		if len(bytes.TrimSpace(doc)) == 0 || string(bytes.TrimSpace(doc)) == "---" {
			continue
		}
		var meta typeMeta
		if err := sigsyaml.Unmarshal(doc, &meta); err != nil {
			fail("not a Kubernetes object: %v\n%s", err, doc)
		}
		if meta.Kind == "" {
			continue // a document of comments only
		}
		object := target(meta.APIVersion, meta.Kind)
		if object == nil {
			fail("%s %s/%s: no API type known to this checker", meta.APIVersion, meta.Kind, meta.Metadata.Name)
		}
		// Case-sensitive, unknown and duplicate fields refused: what the API server's strict field
		// validation does (encoding/json alone would match "readOnlyRootFileSystem" to the real field).
		asJSON, err := sigsyaml.YAMLToJSON(doc)
		if err != nil {
			fail("%s/%s: %v", meta.Kind, meta.Metadata.Name, err)
		}
		strict, err := kjson.UnmarshalStrict(asJSON, object)
		if err != nil {
			fail("%s/%s: %v", meta.Kind, meta.Metadata.Name, err)
		}
		if len(strict) > 0 {
			fail("%s/%s: %v", meta.Kind, meta.Metadata.Name, strict)
		}
		fmt.Printf("%s/%s\n", meta.Kind, meta.Metadata.Name)
		count++
	}
	if count == 0 {
		fail("no object in the input")
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "manifest-check: "+format+"\n", args...)
	os.Exit(1)
}
